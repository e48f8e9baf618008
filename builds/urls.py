from django.urls import path, re_path

from builds import store, upgrade_views, views

# Also matched by builds.fastpath, which answers repeats before Django.
BUILD = r"^api/v1/build/?$"
BUILD_STATUS = r"^api/v1/build/(?P<request_hash>[^/]+)/?$"

# The build API, first of all patterns (builds.machine_urls): the busiest requests of all.
api_urlpatterns = [
    re_path(BUILD, views.BuildView.as_view(), name="api-build"),
    re_path(BUILD_STATUS, views.BuildStatusView.as_view(), name="api-build-status"),
    re_path(r"^api/v1/stats/?$", views.StatsView.as_view(), name="api-stats"),
    re_path(r"^api/v1/build-errors/?$", views.BuildErrorsView.as_view(), name="api-build-errors"),
    re_path(
        r"^api/v1/upgrade-check/?$",
        upgrade_views.UpgradeCheckView.as_view(),
        name="api-upgrade-check",
    ),
    re_path(r"^api/v1/signing-key/?$", views.SigningKeyView.as_view(), name="api-signing-key"),
]

urlpatterns = [
    path("store/<path:name>", store.serve, name="store"),
]
