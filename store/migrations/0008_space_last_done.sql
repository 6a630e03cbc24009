-- When an obligation of a space was last met before judging began (issue 17): by clause id or
-- task (event type), from the site file (`last_done` of a space) or the API, with who set it and
-- when; every change is also a ledger entry. No foreign key: `spaces` comes later (0020).
CREATE TABLE space_last_done (
    site    text COLLATE "C" NOT NULL,
    space   text COLLATE "C" NOT NULL,
    task    text COLLATE "C" NOT NULL,
    done_at timestamptz NOT NULL,
    set_by  text NOT NULL,
    set_at  timestamptz NOT NULL,
    PRIMARY KEY (site, space, task)
);
