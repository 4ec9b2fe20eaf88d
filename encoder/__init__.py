"""opticmem.encoder: the DeepSeek-OCR-style DeepEncoder and MoE decoder, and the codec seam."""
