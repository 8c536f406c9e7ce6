"""The HTTP ceiling for benchmarks/serving.py: a FastAPI app that answers a constant, served
by uvicorn with the options `sentiment serve` uses for one worker (event loop included).

    python benchmarks/constant_app.py PORT
"""

from __future__ import annotations

import sys

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
    settings = Settings(host=HOST, port=int(sys.argv[1]), workers=1)
    uvicorn.run(app, **uvicorn_options(settings))
