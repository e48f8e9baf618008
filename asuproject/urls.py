from django.contrib import admin
from django.urls import include, path, re_path
from django.views.decorators.cache import cache_page
from drf_spectacular.views import (
    SpectacularJSONAPIView,
    SpectacularRedocView,
    SpectacularSwaggerView,
    SpectacularYAMLAPIView,
)

from asuproject.admin import set_up_site
from asuproject.views import api_not_found

set_up_site(admin.site)

urlpatterns = [
    path("admin/", admin.site.urls),
    # packages first: a target's index.json also matches targets' {profile}.json.
    path("", include("packages.urls")),
    path("", include("targets.urls")),
    path("", include("builds.stats_urls")),
    path("", include("builds.urls")),
    # The OpenAPI description of the API, and two readers of it served from local files;
    # after the API itself, which is asked far more often.
    # Generating it costs ~100 ms of CPU and it changes only with the code: kept an hour.
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
    path("", include("builds.page_urls")),
    # Last: any other path under /api/ answers JSON, even with DEBUG on.
    re_path(r"^api/", api_not_found, name="api-not-found"),
]

handler404 = "asuproject.views.not_found"
handler500 = "asuproject.views.server_error"
