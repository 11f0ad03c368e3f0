"""``python -m generator``: ACE-Step on the GPU as an exactly-once Kafka worker."""

from acesteps.service import main
from generator.service import run_generator
from generator.settings import GeneratorSettings

if __name__ == "__main__":
    raise SystemExit(main("generator", GeneratorSettings, run_generator))
