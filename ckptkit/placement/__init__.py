"""Memory plans, device maps, dispatch and disk offload."""
