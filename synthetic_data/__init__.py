"""Generated test and benchmark data: PDFs, English-like prose and small trained GPT-2 models."""
