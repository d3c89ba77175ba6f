"""Device-only stand-in for pillow-jxl-plugin (no wheel there): training reads only JPEG files."""
