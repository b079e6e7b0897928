"""Sources -> records -> WebDataset shards, and the streaming DataModules that read them."""
