ALTER TABLE measurements ADD net_lan_in INTEGER NULL;
ALTER TABLE measurements ADD net_lan_out INTEGER NULL;
ALTER TABLE measurements ADD net_wan_in INTEGER NULL;
ALTER TABLE measurements ADD net_wan_out INTEGER NULL;
