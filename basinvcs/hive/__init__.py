"""The hive: many instances train in one shared basin and sync by small signed updates.

- `update`: the wire format of those updates ("basin/update" records) and their encodings, with
  error feedback on the sending side;
- `rules`, `outer`, `outliers`: a round's arithmetic (robust aggregation, the outer optimiser, the
  intake outlier check), with no repository or network;
- `journal`, `coordinator`, `server`: the coordinator (durable intake, rounds, head commits) and
  its HTTP server;
- `edge`: an instance's side (join, submit, sync).
"""
