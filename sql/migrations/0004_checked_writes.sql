-- SPEC §7 (small batches in two round trips): a write that checks its own outcome, so COMMIT
-- can travel in the same round trip as the write instead of waiting for Python to look at the
-- result first. flexsvc_assert(ok, message) returns true, or raises serialization_failure
-- (SQLSTATE 40001) with ``message``: the transaction is aborted, the COMMIT pipelined after it
-- does nothing, and the service plans the batch again on fresh facts (a retry that runs alone),
-- exactly as after any other concurrent change. The message is logged, never sent to a client.
CREATE OR REPLACE FUNCTION flexsvc_assert(ok boolean, message text) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF ok IS NOT TRUE THEN
        RAISE EXCEPTION USING ERRCODE = 'serialization_failure', MESSAGE = message;
    END IF;
    RETURN true;
END
$$;
