"""The judge layer: prompt rendering, the HTTP client, the vLLM server lifecycle and the TRL reward."""
