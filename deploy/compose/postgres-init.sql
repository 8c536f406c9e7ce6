-- Run once by the postgres image when its data volume is empty (as POSTGRES_USER, owner of
-- the new database): MLflow's store is POSTGRES_DB (mlflow); the prediction log gets its own.
CREATE DATABASE predictions;
