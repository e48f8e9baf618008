from django.urls import path, re_path

from builds import store, views

urlpatterns = [
    re_path(r"^api/v1/build/?$", views.BuildView.as_view(), name="api-build"),
    re_path(
        r"^api/v1/build/(?P<request_hash>[^/]+)/?$",
        views.BuildStatusView.as_view(),
        name="api-build-status",
    ),
    re_path(r"^api/v1/stats/?$", views.StatsView.as_view(), name="api-stats"),
    re_path(r"^api/v1/build-errors/?$", views.BuildErrorsView.as_view(), name="api-build-errors"),
    path("store/<path:name>", store.serve, name="store"),
]
