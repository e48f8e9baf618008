from django.contrib import admin
from django.urls import include, path

from asuproject.admin import set_up_site
from builds import stats_urls
from builds import urls as builds_urls
from packages import urls as packages_urls
from targets import urls as targets_urls

set_up_site(admin.site)

# The machine paths come first, the busiest patterns first within them: a build request,
# a poll or a document is not tried against the admin's, the statistics' or the pages'
# patterns (10-16 % of their CPU, BENCHMARKS.md). No prefix patterns: every pattern keeps
# its full path, as drf-spectacular's schema reads it, and every URL stays.
api_urlpatterns = [
    *builds_urls.api_urlpatterns,
    *packages_urls.api_urlpatterns,
    *targets_urls.api_urlpatterns,
    *stats_urls.api_urlpatterns,
    *builds_urls.api_fallback,
]
# packages first: a target's index.json also matches targets' {profile}.json.
json_urlpatterns = [*packages_urls.json_urlpatterns, *targets_urls.json_urlpatterns]

urlpatterns = [
    *json_urlpatterns,
    *api_urlpatterns,
    path("admin/", admin.site.urls),
    path("", include("targets.urls")),
    path("", include("builds.stats_urls")),
    path("", include("builds.urls")),
    path("", include("builds.page_urls")),
]

handler404 = "asuproject.views.not_found"
handler500 = "asuproject.views.server_error"
