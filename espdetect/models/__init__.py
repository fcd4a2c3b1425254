"""Model files shipped with espdetect (see README.md here)."""
