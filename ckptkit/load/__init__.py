"""Loading tensors into a dict or a module: the module-filling plan and its readers."""
