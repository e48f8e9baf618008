from django.contrib import admin
from django.urls import include, path

from asuproject.admin import set_up_site

set_up_site(admin.site)

urlpatterns = [
    path("admin/", admin.site.urls),
    # packages first: a target's index.json also matches targets' {profile}.json.
    path("", include("packages.urls")),
    path("", include("targets.urls")),
    path("", include("builds.stats_urls")),
    path("", include("builds.urls")),
    path("", include("builds.page_urls")),
]

handler404 = "asuproject.views.not_found"
handler500 = "asuproject.views.server_error"
