"""The second floor: bytes into tensors and tensors into files. torch lives here."""
