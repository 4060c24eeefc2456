"""Entity linking (M3EL) and multimodal entity alignment (UMAEA) models: pure torch, no I/O."""
