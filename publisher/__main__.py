"""``python -m publisher``: pin, register and announce tracks."""

from acesteps.service import main
from publisher.service import run_publisher
from publisher.settings import PublisherSettings

if __name__ == "__main__":
    raise SystemExit(main("publisher", PublisherSettings, run_publisher))
