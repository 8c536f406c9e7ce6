"""The HTTP ceiling for benchmarks/serving.py and benchmarks/peers.py: a FastAPI app that
answers a constant, served by uvicorn with the options `sentiment serve` uses for as many
workers (event loop included; several workers share one socket, as uvicorn's own supervisor
does).

    python benchmarks/constant_app.py PORT [WORKERS]
"""

from __future__ import annotations

import sys
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from sentiment_mlops.config import Settings
from sentiment_mlops.serving.launcher import HOST
from sentiment_mlops.serving.server import uvicorn_options

app = FastAPI()


@app.get("/constant")
async def constant() -> dict[str, str]:
    return {"status": "ok"}


if __name__ == "__main__":
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    settings = Settings(host=HOST, port=int(sys.argv[1]), workers=workers)
    # Several workers need the app as an import string, which each worker imports anew.
    target = "constant_app:app" if workers > 1 else app
    uvicorn.run(target, app_dir=str(Path(__file__).parent), **uvicorn_options(settings))
