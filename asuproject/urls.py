from django.contrib import admin
from django.urls import include, path, re_path
from django.views.decorators.cache import cache_page
from drf_spectacular.views import (
    SpectacularJSONAPIView,
    SpectacularRedocView,
    SpectacularSwaggerView,
    SpectacularYAMLAPIView,
)

from asuproject.admin import set_up_site
from asuproject.views import api_not_found
from builds import stats_urls
from builds import urls as builds_urls
from packages import urls as packages_urls
from targets import urls as targets_urls

set_up_site(admin.site)

# The OpenAPI description of the API, and two readers of it served from local files.
# Generating it costs ~100 ms of CPU and it changes only with the code: kept an hour.
openapi_urlpatterns = [
    path(
        "api/v1/openapi.json",
        cache_page(3600)(SpectacularJSONAPIView.as_view()),
        name="openapi-json",
    ),
    path(
        "api/v1/openapi.yaml",
        cache_page(3600)(SpectacularYAMLAPIView.as_view()),
        name="openapi-yaml",
    ),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="openapi-json"), name="api-docs"),
    path(
        "api/redoc/",
        SpectacularRedocView.as_view(url_name="openapi-json", template_name="api/redoc.html"),
        name="api-redoc",
    ),
]

# The machine paths come first, the busiest patterns first within them: a build request,
# a poll or a document is not tried against the admin's, the statistics' or the pages'
# patterns (10-16 % of their CPU, BENCHMARKS.md). No prefix patterns: every pattern keeps
# its full path, as drf-spectacular's schema reads it, and every URL stays.
api_urlpatterns = [
    *builds_urls.api_urlpatterns,
    *packages_urls.api_urlpatterns,
    *targets_urls.api_urlpatterns,
    *stats_urls.api_urlpatterns,
    *openapi_urlpatterns,
    # Last of the /api/ routes: any other path answers JSON, even with DEBUG on.
    re_path(r"^api/", api_not_found, name="api-not-found"),
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
