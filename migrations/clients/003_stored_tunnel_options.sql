ALTER TABLE stored_tunnels ADD public_port NUMBER;
ALTER TABLE stored_tunnels ADD further_options TEXT;
