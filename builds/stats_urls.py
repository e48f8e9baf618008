"""/metrics, /stats/ and the statistics API (`api_urlpatterns`, included by asuproject.urls
before `builds.urls.api_fallback`, which answers every other /api/ path with a 404)."""

from django.urls import path

from builds import metrics, stats_views

urlpatterns = [
    path("metrics", metrics.metrics_view, name="metrics"),
    path("stats/", stats_views.stats_page, name="stats"),
]

api_urlpatterns = [
    # openwrt/asu's paths and shapes.
    path("api/v1/stats/summary", stats_views.SummaryView.as_view(), name="api-stats-summary"),
    path("api/v1/builds-per-day", stats_views.BuildsPerDayView.as_view()),
    path("api/v1/builds-by-version", stats_views.BuildsByVersionView.as_view()),
    path("api/v1/top-packages", stats_views.TopPackagesView.as_view()),
    # One for each chart of /stats/.
    path("api/v1/stats/builds-per-day", stats_views.BuildsPerDayView.as_view()),
    path("api/v1/stats/builds-by-version", stats_views.BuildsByVersionView.as_view()),
    path("api/v1/stats/cache-hit-rate", stats_views.CacheHitRateView.as_view()),
    path("api/v1/stats/build-durations", stats_views.BuildDurationsView.as_view()),
    path("api/v1/stats/versions", stats_views.TopVersionsView.as_view()),
    path("api/v1/stats/targets", stats_views.TopTargetsView.as_view()),
    path("api/v1/stats/profiles", stats_views.TopProfilesView.as_view()),
    path("api/v1/stats/packages", stats_views.TopPackagesView.as_view()),
    path("api/v1/stats/clients", stats_views.ClientsView.as_view()),
    path("api/v1/stats/failure-reasons", stats_views.FailureReasonsView.as_view()),
]
