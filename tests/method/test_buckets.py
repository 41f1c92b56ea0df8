"""Bucket tables and the choice of bucket, ties included."""
import pytest

from framepack_core.method.buckets import BUCKETS_640, bucket_table, nearest_bucket

PUBLISHED_640 = [
    (416, 960), (448, 864), (480, 832), (512, 768), (544, 704), (576, 672), (608, 640),
    (640, 608), (672, 576), (704, 544), (768, 512), (832, 480), (864, 448), (960, 416),
]


def test_640_is_the_published_table():
    assert list(bucket_table(640)) == PUBLISHED_640 == list(BUCKETS_640)


@pytest.mark.parametrize("resolution", [128, 256, 480, 512, 720, 960])
def test_scaled_tables(resolution):
    table = bucket_table(resolution)
    assert len(table) == len(PUBLISHED_640)
    for (h, w), (h0, w0) in zip(table, PUBLISHED_640):
        assert h % 16 == 0 and w % 16 == 0 and h >= 16 and w >= 16
        assert abs(h - h0 * resolution / 640) <= 8 and abs(w - w0 * resolution / 640) <= 8
        assert (h > w) == (h0 > w0) or h == w  # orientation kept (rounding may make a square)


def test_exact_scaled_values():
    assert bucket_table(128)[0] == (80, 192)
    assert bucket_table(128)[4] == (112, 144)
    assert bucket_table(320)[6] == (304, 320)


def test_ties_pick_the_later_entry():
    # A square picture is equally far from 608x640 and 640x608: the later (portrait) entry wins.
    assert nearest_bucket(100, 100) == (640, 608)
    # At 128 several entries round to 128x128; the last of them wins and it is square.
    assert nearest_bucket(500, 500, 128) == (128, 128)


@pytest.mark.parametrize("height,width,expected", [
    (720, 1280, (480, 832)), (1080, 1920, (480, 832)), (1920, 1080, (832, 480)),
    (600, 800, (544, 704)), (800, 600, (704, 544)), (1, 1, (640, 608)), (70, 100, (512, 768)),
])
def test_choice_640(height, width, expected):
    assert nearest_bucket(height, width) == expected


def test_small_landscape_picture_stays_landscape():
    h, w = nearest_bucket(70, 100, 128)  # a 100x70 picture
    assert (h, w) == (112, 144) and w > h


def test_resolution_out_of_range():
    with pytest.raises(ValueError, match="resolution"):
        bucket_table(64)


@pytest.mark.parametrize("resolution", [128, 640])
def test_choice_is_the_brute_force_minimum(resolution):
    table = bucket_table(resolution)
    for height in range(1, 400, 7):
        for width in range(1, 400, 11):
            # Smallest metric; among equals the highest index.
            best = min(range(len(table)), key=lambda i: (abs(height * table[i][1] - width * table[i][0]), -i))
            assert nearest_bucket(height, width, resolution) == table[best]
