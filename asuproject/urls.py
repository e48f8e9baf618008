from django.contrib import admin
from django.urls import include, path

from asuproject.admin import set_up_site

set_up_site(admin.site)

# The apps' patterns by module name (the project imports no app): the machine paths
# first (builds.machine_urls says why), then the admin and the pages.
urlpatterns = [
    path("", include("builds.machine_urls")),
    path("admin/", admin.site.urls),
    path("", include("targets.urls")),
    path("", include("builds.stats_urls")),
    path("", include("builds.urls")),
    path("", include("builds.page_urls")),
]

handler404 = "asuproject.views.not_found"
handler500 = "asuproject.views.server_error"
