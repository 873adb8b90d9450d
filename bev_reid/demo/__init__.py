"""`bev-reid demo`: the whole pipeline on a synthetic world (:mod:`.run`) and the pictures of
its report (:mod:`.report`)."""
