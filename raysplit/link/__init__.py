"""Network models for edge emulation and split inference: channels, links, media, traces."""
