"""Model families (one package each), shared layers and the factories."""
