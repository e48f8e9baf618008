"""/metrics, /stats/ and the statistics API (`api_urlpatterns`, included by builds.machine_urls
before the catch-all that answers every other /api/ path with a 404)."""

from django.urls import path

from builds import metrics, stats_views

urlpatterns = [
    path("metrics", metrics.metrics_view, name="metrics"),
    path("stats/", stats_views.stats_page, name="stats"),
]

api_urlpatterns = [
    # openwrt/asu's paths and shapes.
    path("api/v1/stats/summary", stats_views.SummaryView.as_view(), name="api-stats-summary"),
    path(
        "api/v1/builds-per-day",
        stats_views.AsuBuildsPerDayView.as_view(),
        name="api-builds-per-day",
    ),
    path(
        "api/v1/builds-by-version",
        stats_views.AsuBuildsByVersionView.as_view(),
        name="api-builds-by-version",
    ),
    path("api/v1/top-packages", stats_views.AsuTopPackagesView.as_view(), name="api-top-packages"),
    # One for each chart of /stats/.
    path(
        "api/v1/stats/builds-per-day",
        stats_views.BuildsPerDayView.as_view(),
        name="api-stats-builds-per-day",
    ),
    path(
        "api/v1/stats/builds-by-version",
        stats_views.BuildsByVersionView.as_view(),
        name="api-stats-builds-by-version",
    ),
    path(
        "api/v1/stats/cache-hit-rate",
        stats_views.CacheHitRateView.as_view(),
        name="api-stats-cache-hit-rate",
    ),
    path(
        "api/v1/stats/build-durations",
        stats_views.BuildDurationsView.as_view(),
        name="api-stats-build-durations",
    ),
    path("api/v1/stats/versions", stats_views.TopVersionsView.as_view(), name="api-stats-versions"),
    path("api/v1/stats/targets", stats_views.TopTargetsView.as_view(), name="api-stats-targets"),
    path("api/v1/stats/profiles", stats_views.TopProfilesView.as_view(), name="api-stats-profiles"),
    path("api/v1/stats/packages", stats_views.TopPackagesView.as_view(), name="api-stats-packages"),
    path("api/v1/stats/clients", stats_views.ClientsView.as_view(), name="api-stats-clients"),
    path(
        "api/v1/stats/failure-reasons",
        stats_views.FailureReasonsView.as_view(),
        name="api-stats-failure-reasons",
    ),
]
