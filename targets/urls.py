"""A profile's {profile}.json, the revision endpoint and the redirects of old paths."""

from django.urls import path, re_path

from targets import views

OVERVIEW = "/json/v1/overview.json"

# The json/v1 and API patterns are included first by builds.machine_urls, the rest as it is.
json_urlpatterns = [
    # {dir} is a version's folder: releases/24.10.1, releases/24.10-SNAPSHOT, snapshots.
    # packages.urls comes first: its index.json would otherwise be read as a profile.
    re_path(
        r"^json/v1/(?P<directory>.+)/targets/(?P<target>[^/]+)/(?P<subtarget>[^/]+)/"
        r"(?P<profile>[^/]+)\.json$",
        views.profile_json,
        name="profile-json",
    ),
]

api_urlpatterns = [
    path(
        "api/v1/revision/<str:version>/<str:target>/<str:subtarget>",
        views.RevisionView.as_view(),
        name="revision",
    ),
    path("api/v1/overview", views.redirect_to(OVERVIEW)),
    path("api/v1/latest", views.redirect_to("/json/v1/latest.json")),
    path("api/overview", views.redirect_to(OVERVIEW)),
]

urlpatterns = [
    path("overview", views.redirect_to(OVERVIEW)),
]
