"""The machine paths (the API, its description, json/v1), resolved before every other
pattern: a build request, a poll or a document is not tried against the admin's, the
statistics' or the pages' patterns (10-16 % of their CPU, BENCHMARKS.md). No prefix
patterns: every pattern keeps its full path, as drf-spectacular's schema reads it."""

from django.urls import path, re_path
from django.views.decorators.cache import cache_page
from drf_spectacular.views import (
    SpectacularJSONAPIView,
    SpectacularRedocView,
    SpectacularSwaggerView,
    SpectacularYAMLAPIView,
)

from asuproject.views import api_not_found
from builds import stats_urls
from builds import urls as builds_urls
from packages import urls as packages_urls
from targets import urls as targets_urls

# The OpenAPI description and two readers of it served from local files. Generating it
# costs ~100 ms of CPU and it changes only with the code: kept an hour.
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

urlpatterns = [
    # packages first: a target's index.json also matches targets' {profile}.json.
    *packages_urls.json_urlpatterns,
    *targets_urls.json_urlpatterns,
    # The busiest first.
    *builds_urls.api_urlpatterns,
    *packages_urls.api_urlpatterns,
    *targets_urls.api_urlpatterns,
    *stats_urls.api_urlpatterns,
    *openapi_urlpatterns,
    # Last of the /api/ routes: any other path answers JSON, even with DEBUG on.
    re_path(r"^api/", api_not_found, name="api-not-found"),
]
