"""Device-only stand-in for pillow-heif (no wheel there): training reads only JPEG files."""


def register_heif_opener(*a, **k):
    pass
