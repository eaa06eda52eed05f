"""Camera / video / image-folder demos on top of the runtime."""
