module github.com/cimdeploy/cimdeploy

go 1.25

require (
	github.com/pmezard/go-difflib v1.0.0
	github.com/spf13/cobra v1.10.2
)

require (
	github.com/inconshreveable/mousetrap v1.1.0 // indirect
	github.com/sethvargo/go-envconfig v1.4.3 // indirect
	github.com/spf13/pflag v1.0.9 // indirect
	golang.org/x/sync v0.17.0 // indirect
)
