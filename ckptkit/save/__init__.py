"""resave and materialize: sources read once, written by the one shard writer, published atomically."""
