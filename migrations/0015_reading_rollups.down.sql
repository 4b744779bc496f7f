DROP TABLE reading_rollup_marks;
DROP TABLE reading_rollups;
