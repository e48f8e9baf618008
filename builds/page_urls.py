"""The public HTML pages. The machine paths (/api/, /json/, /store/) live in other urls.py."""

from django.urls import path

from builds import pages, upgrade_views

app_name = "pages"

urlpatterns = [
    path("", pages.home, name="home"),
    path("builds/", pages.build_list, name="builds"),
    path("builds/<str:request_hash>/", pages.build_detail, name="build"),
    path("upgrade/", upgrade_views.upgrade_page, name="upgrade"),
    path("targets/", pages.version_list, name="versions"),
    path("targets/<str:version>/", pages.target_list, name="targets"),
    path("targets/<str:version>/<str:board>/<str:subtarget>/", pages.profile_list, name="profiles"),
    path(
        "targets/<str:version>/<str:board>/<str:subtarget>/<str:profile>/",
        pages.device,
        name="device",
    ),
    path("search/", pages.search, name="search"),
]
