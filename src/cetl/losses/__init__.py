"""Pure loss functions; each cites the paper equation it implements."""
