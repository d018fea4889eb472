#!/usr/bin/env python3
"""Generate samples/data/sales.db: a small, deterministic sales database for the sql.query tool.

Run again after changing it: ``python scripts/make_sample_data.py``. The same seed always gives
the same rows, so answers about the sample data are reproducible.
"""

from __future__ import annotations

import random
import sqlite3
import sys
from datetime import date, timedelta
from pathlib import Path

SEED = 20260101
TARGET = Path(__file__).resolve().parent.parent / "samples" / "data" / "sales.db"

PRODUCTS = [
    ("Trail Runner Shoes", "Footwear", 89.0),
    ("City Sneakers", "Footwear", 64.5),
    ("Waterproof Jacket", "Apparel", 129.0),
    ("Merino T-Shirt", "Apparel", 39.9),
    ("Daypack 20L", "Bags", 74.0),
    ("Travel Duffel 40L", "Bags", 99.0),
    ("Insulated Bottle", "Accessories", 24.0),
    ("Headlamp", "Accessories", 34.5),
    ("Trekking Poles", "Equipment", 59.0),
    ("Two-Person Tent", "Equipment", 249.0),
]
REGIONS = ["North", "South", "East", "West"]
SEGMENTS = ["Consumer", "Business"]
FIRST = ["Ada", "Ben", "Chloe", "Dev", "Elif", "Farah", "Gus", "Hana", "Ivan", "June", "Kai", "Lena"]
LAST = ["Smith", "Okafor", "Novak", "Tanaka", "Garcia", "Müller", "Rossi", "Dubois", "Khan", "Berg"]

SCHEMA = """
CREATE TABLE products (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, category TEXT NOT NULL, unit_price REAL NOT NULL
);
CREATE TABLE customers (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, region TEXT NOT NULL, segment TEXT NOT NULL
);
CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    order_date TEXT NOT NULL,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    product_id INTEGER NOT NULL REFERENCES products(id),
    quantity INTEGER NOT NULL,
    unit_price REAL NOT NULL,
    total REAL NOT NULL
);
CREATE INDEX orders_date ON orders(order_date);
"""


def build(path: Path, orders: int = 600) -> None:
    rng = random.Random(SEED)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    connection = sqlite3.connect(path)
    with connection:
        connection.executescript(SCHEMA)
        connection.executemany(
            "INSERT INTO products (id, name, category, unit_price) VALUES (?, ?, ?, ?)",
            [(i + 1, *product) for i, product in enumerate(PRODUCTS)],
        )
        customers = [
            (i + 1, f"{rng.choice(FIRST)} {rng.choice(LAST)}", rng.choice(REGIONS), rng.choice(SEGMENTS))
            for i in range(60)
        ]
        connection.executemany("INSERT INTO customers VALUES (?, ?, ?, ?)", customers)
        start = date(2025, 1, 1)
        rows = []
        for order_id in range(1, orders + 1):
            product_id = rng.randint(1, len(PRODUCTS))
            price = PRODUCTS[product_id - 1][2]
            quantity = rng.choices([1, 2, 3, 4, 5], weights=[50, 25, 12, 8, 5])[0]
            day = start + timedelta(days=rng.randint(0, 364))
            rows.append(
                (
                    order_id,
                    day.isoformat(),
                    rng.randint(1, 60),
                    product_id,
                    quantity,
                    price,
                    round(price * quantity, 2),
                )
            )
        rows.sort(key=lambda row: (row[1], row[0]))
        connection.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    connection.execute("VACUUM")
    connection.close()


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else TARGET
    build(target)
    print(f"wrote {target}")
