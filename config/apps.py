from django.contrib.admin.apps import AdminConfig


class ConsoleAdminConfig(AdminConfig):
    """django.contrib.admin with the project's site (config/console.py) as `admin.site`."""

    default_site = "config.console.ConsoleSite"
