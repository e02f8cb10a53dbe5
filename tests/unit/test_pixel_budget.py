"""The dataset service's bound on the pixels validated at once, over every upload stream."""

from __future__ import annotations

import io
import threading
import time

import pytest
from PIL import Image

from trainyard import images
from trainyard.services.dataset.server import DatasetConfig
from trainyard.services.dataset.service import PixelBudget


def test_a_file_waits_until_its_pixels_fit_and_a_huge_one_until_it_is_alone():
    budget = PixelBudget(400)
    order: list[str] = []
    held = threading.Event()

    def decode(name: str, pixels: int, seconds: float) -> None:
        with budget.hold(pixels):
            order.append(f"{name}+")
            held.set()
            time.sleep(seconds)
            order.append(f"{name}-")

    first = threading.Thread(target=decode, args=("a", 300, 0.3))
    first.start()
    held.wait(5)
    waiting = [threading.Thread(target=decode, args=("b", 200, 0.0)),  # 300 + 200 > 400: waits for a
               threading.Thread(target=decode, args=("c", 10_000, 0.0))]  # over the budget: waits to be alone
    for thread in waiting:
        thread.start()
    for thread in [first, *waiting]:
        thread.join(5)
    assert order[:2] == ["a+", "a-"] and budget.used == 0
    assert sorted(order[2:]) == ["b+", "b-", "c+", "c-"]


def test_the_pixels_of_a_file_come_from_its_header():
    png, jpeg = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (400, 300)).save(png, format="PNG")
    Image.new("RGB", (400, 300)).save(jpeg, format="JPEG")
    assert images.decode_pixels(png.getvalue()) == 120_000
    assert images.decode_pixels(jpeg.getvalue()) == 50 * 37  # validated at 1/8 scale
    assert images.decode_pixels(b"not an image") == 0


def test_the_budget_comes_from_the_environment():
    s3 = {"TRAINYARD_S3_ENDPOINT": "127.0.0.1:9000", "TRAINYARD_S3_ACCESS_KEY": "k", "TRAINYARD_S3_SECRET_KEY": "s",
          "TRAINYARD_INTERNAL_TOKEN": "t" * 32}
    assert DatasetConfig.from_env(s3).limits.decode_pixels == 400_000_000
    assert DatasetConfig.from_env({**s3, "TRAINYARD_DATASET_DECODE_PIXELS": "1000"}).limits.decode_pixels == 1000
    with pytest.raises(SystemExit, match="TRAINYARD_DATASET_DECODE_PIXELS must be at least 1"):
        DatasetConfig.from_env({**s3, "TRAINYARD_DATASET_DECODE_PIXELS": "0"})
