"""Data: readers of the on-disk formats, label statistics, tokenizer and the LightningDataModule."""
