"""Video commands for the terminal (`imagebash video-metrics`)."""
