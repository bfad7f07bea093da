"""The judge: prompts, modes, backends (a vLLM server over HTTP, or a model in this process), the server
lifecycle, the verdict cache, the judgment log and the scorer. It knows no recipe and no trainer."""
