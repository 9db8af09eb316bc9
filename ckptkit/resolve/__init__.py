"""Every way of naming a checkpoint -> one validated local directory (local forms, hub cache, download)."""
