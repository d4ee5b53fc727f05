-- The demo bot's schema, loaded by `otelbot demo` (re-runnable: it starts from scratch).
-- ${customers}, ${orders_per_customer} and ${promo_codes} are filled in by the demo.
DROP SCHEMA IF EXISTS otelbot_demo CASCADE;
CREATE SCHEMA otelbot_demo;

CREATE TABLE otelbot_demo.customers (
    id bigint PRIMARY KEY,
    name text NOT NULL,
    city text NOT NULL
);
INSERT INTO otelbot_demo.customers
SELECT g, 'Customer ' || g, (ARRAY['Berlin', 'Lisbon', 'Tbilisi', 'Yerevan'])[1 + g % 4]
  FROM generate_series(1, ${customers}) AS g;

CREATE TABLE otelbot_demo.products (
    id int PRIMARY KEY,
    name text NOT NULL,
    price_cents int NOT NULL
);
INSERT INTO otelbot_demo.products
SELECT g, 'Product ' || g, 100 + (g * 37) % 9900 FROM generate_series(1, 200) AS g;

CREATE TABLE otelbot_demo.orders (
    id bigserial PRIMARY KEY,
    customer_id bigint NOT NULL,
    product_id int NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    note text
);
CREATE INDEX orders_customer_id_idx ON otelbot_demo.orders (customer_id);
-- Built-in problem: no query ever filters on note, yet every INSERT maintains this index.
CREATE INDEX orders_note_idx ON otelbot_demo.orders (note);
INSERT INTO otelbot_demo.orders (customer_id, product_id)
SELECT 1 + g % ${customers}, 1 + g % 200 FROM generate_series(1, ${customers} * ${orders_per_customer}) AS g;

CREATE TABLE otelbot_demo.order_items (
    id bigserial PRIMARY KEY,
    order_id bigint NOT NULL,
    product_id int NOT NULL,
    quantity int NOT NULL
);
CREATE INDEX order_items_order_id_idx ON otelbot_demo.order_items (order_id);
INSERT INTO otelbot_demo.order_items (order_id, product_id, quantity)
SELECT o.id, 1 + (o.id * k) % 200, k FROM otelbot_demo.orders o, generate_series(1, 2) AS k;

-- Built-in problem: /promo looks codes up by `code`, and there is no index on it.
CREATE TABLE otelbot_demo.promo_codes (
    id bigserial PRIMARY KEY,
    code text NOT NULL,
    discount_percent int NOT NULL
);
INSERT INTO otelbot_demo.promo_codes (code, discount_percent)
SELECT 'PROMO' || g, 5 + g % 30 FROM generate_series(1, ${promo_codes}) AS g;

ANALYZE otelbot_demo.customers, otelbot_demo.products, otelbot_demo.orders,
        otelbot_demo.order_items, otelbot_demo.promo_codes;
