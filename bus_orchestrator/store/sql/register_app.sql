-- Records that app $1 runs the saga types in $2 (each type is one app's: a type another
-- app holds is left to it). Returns each type of app $1, old and new, and each type in $2
-- that another app holds. The statement's snapshot does not see the rows it inserts, hence
-- the union with them.
WITH added AS (
    INSERT INTO saga_type_app (saga_type, app)
    SELECT t, $1::text FROM unnest($2::text[]) AS t
    ON CONFLICT (saga_type) DO NOTHING
    RETURNING saga_type, app
)
SELECT saga_type, app FROM saga_type_app WHERE app = $1::text OR saga_type = ANY($2::text[])
UNION
SELECT saga_type, app FROM added
