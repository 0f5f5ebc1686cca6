"""Token Pruning Explorer: see what visual-token pruning does inside multimodal LLMs."""
