# backlitfix for digiKam's Batch Queue Manager: paste this into Base Tools > Custom Tools >
# User Shell Script. digiKam writes each path into the text in double quotes, unescaped, and
# runs it with /bin/sh -c; inside this quoted here-document the shell reads the paths as plain
# text, and `backlitfix plugins digikam` strips the quotes. The delimiter word is random per
# installation (`backlitfix plugins install digikam`): a file name could end the here-document
# early only by containing it. Add --model M or --strength S after `digikam` if wanted.
backlitfix plugins digikam <<'BACKLITFIX_PATHS_@TOKEN@'
$INPUT
$OUTPUT
BACKLITFIX_PATHS_@TOKEN@
