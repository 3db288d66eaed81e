"""Reports: measured numbers beside the paper's, with plots."""
