# Prints the completions zsh offers for the line $2 with the completion
# function in the folder $1 (after zsh-capture-completion).
zmodload zsh/zpty || exit 3
zpty z zsh -f -i
zpty -w z "fpath=(${(q)1} \$fpath); autoload -U compinit; compinit -u -D"
zpty -w z "bindkey '^I' complete-word"
zpty -w z "zstyle ':completion:*' list-grouped false; zstyle ':completion:*' insert-tab false"
zpty -w z 'compadd () { builtin compadd -O __hits "$@"; print -rl -- "${(@)__hits/#/C${:-AND}:}" }'
zpty -w z 'comppostfuncs=(__end); __end () { print -r -- "E${:-ND}:"; exit }'
zpty -w z "$2"$'\t'
integer n=0
while zpty -r z line; do
  [[ $line == *'END:'* ]] && break
  print -r -- $line
  (( ++n > 2000 )) && break
done | tr -d '\r' | sed -n 's/^.*CAND://p'
zpty -d z
