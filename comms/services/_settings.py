from django.conf import settings


def setting(name, default):
    """A comms setting, with the default used when the settings module leaves it out."""
    return getattr(settings, name, default)
