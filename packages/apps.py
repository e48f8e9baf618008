from django.apps import AppConfig


class PackagesConfig(AppConfig):
    name = "packages"

    def ready(self) -> None:
        # Transition only: builds/services.py still calls `targets.sync.refresh_target`,
        # which moved to `packages.sync.refresh_target` with the package-index sync.
        # Delete this once builds/ calls packages.sync.refresh_target itself.
        from packages import sync
        from targets import sync as catalogue

        catalogue.refresh_target = sync.refresh_target
