from django.urls import re_path

from packages import views

urlpatterns = [
    # The trailing slash is optional: clients spell it both ways.
    re_path(r"^api/v1/package-changes/?$", views.PackageChangesView.as_view()),
    re_path(r"^api/v1/package-changes/apply/?$", views.ApplyView.as_view()),
]
