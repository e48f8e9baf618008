"""The json/v1 documents that list packages, and the package-changes API."""

from django.urls import path, re_path

from packages import documents, views

# Included first of all patterns by builds.machine_urls.
json_urlpatterns = [
    path("json/v1/overview.json", documents.overview, name="overview"),
    path("json/v1/branches.json", documents.branches, name="branches"),
    path("json/v1/latest.json", documents.latest, name="latest"),
    # {dir} is a version's folder: releases/24.10.1, releases/24.10-SNAPSHOT, snapshots.
    re_path(
        r"^json/v1/(?P<directory>.+)/targets/(?P<target>[^/]+)/(?P<subtarget>[^/]+)/index\.json$",
        documents.target_index,
        name="target-index",
    ),
    re_path(
        r"^json/v1/(?P<directory>.+)/packages/(?P<arch>[^/]+)-index\.json$",
        documents.arch_index,
        name="arch-index",
    ),
]

api_urlpatterns = [
    # The trailing slash is optional: clients spell it both ways.
    re_path(r"^api/v1/package-changes/?$", views.PackageChangesView.as_view()),
    re_path(r"^api/v1/package-changes/apply/?$", views.ApplyView.as_view()),
]
